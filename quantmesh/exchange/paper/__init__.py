"""Paper trading: a real venue's public prices and trades, our own matching engine.

- ``exchange``: ``PaperExchange`` - the ``Exchange`` protocol over both;
- ``trades``: the public trades of one symbol, stream first, REST behind it;
- ``account``: our orders, balances and fills, matched and persisted;
- ``build``: the exchange from the ``exchange`` settings.
"""

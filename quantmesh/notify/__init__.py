"""Messages people receive: events, channels (webhook, Telegram, Slack, Discord), one
bounded queue per channel, the fleet election, the daily summary.

Components get a ``Notifier`` through their constructors (``NOP`` by default) and call
``emit(event)``, which never waits and never raises; ``wiring`` builds the real one
(``build.build_notifier``) when ``notifications.channels`` lists any.
"""

from quantmesh.notify.events import NOP, Event, NopNotifier, NotificationService, Notifier

__all__ = ["NOP", "Event", "NopNotifier", "NotificationService", "Notifier"]

"""Storage: the repository protocol and its SQLAlchemy implementation."""

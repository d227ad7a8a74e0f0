"""The durable store: SQLAlchemy Core over SQLite or PostgreSQL."""

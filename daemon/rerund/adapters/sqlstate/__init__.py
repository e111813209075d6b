"""The shared state in a SQL database through SQLAlchemy Core: PostgreSQL for replicas, SQLite
for one process."""

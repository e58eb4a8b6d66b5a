"""Several daemons sharing one PostgreSQL store: membership, sharding, leadership."""

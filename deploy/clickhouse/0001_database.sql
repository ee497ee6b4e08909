-- The one database of the query contract (docs/relations.md). Every relation
-- and storage table lives here, and every statement names it explicitly, so
-- migrations and queries work whatever default database a client connects to.
CREATE DATABASE IF NOT EXISTS xp;

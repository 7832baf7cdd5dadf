-- The identity service's schema; its tables arrive with the identity issue.
CREATE SCHEMA IF NOT EXISTS identity;

-- The payments service's schema; its tables arrive with the payments issue.
CREATE SCHEMA IF NOT EXISTS payments;

-- 000-schemas: the TimescaleDB extension and the three schemas of the platform.
--   tenancy   organizations, users, servers, sites, quotas (plain tables)
--   metrics   time-series hypertables, their continuous aggregates and policies
--   analytics results written by the analytics package (forecasts, anomalies, runs)
-- Applied once by alembic revision 0001.

create extension if not exists timescaledb;

create schema if not exists tenancy;
create schema if not exists metrics;
create schema if not exists analytics;

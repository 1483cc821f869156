"""The transformation stage: runs the dbt project in dbt/ (sources -> staging -> marts)."""

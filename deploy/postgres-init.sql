-- One Postgres for the stack: MLflow's store (POSTGRES_DB), the label database and Airflow's metadata.
CREATE DATABASE labels;
CREATE DATABASE airflow;

# One image for the API, the workbench and the pipeline (target "app"), Airflow on top of it ("airflow"), and the
# app with a Java runtime for Spark workers and submitters ("spark", compose profile spark).
# CPU torch only.
FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 WORKBENCH_HOME=/data
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY core core
COPY api api
COPY cli cli
COPY workbench workbench
COPY pages pages
COPY dags dags
COPY .streamlit .streamlit
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt -e . psycopg2-binary
VOLUME /data
EXPOSE 3000 8501
CMD ["workbench", "api", "--host", "0.0.0.0"]

# Airflow lives in its own venv (in the app's environment it would downgrade FastAPI); its tasks run the
# app's interpreter, so the DAG calls the same core pipeline.
FROM app AS airflow
RUN python -m venv /opt/airflow-venv \
 && /opt/airflow-venv/bin/pip install "apache-airflow==3.3.2" psycopg2-binary
ENV PATH=/opt/airflow-venv/bin:$PATH WORKBENCH_PYTHON=/usr/local/bin/python AIRFLOW_HOME=/opt/airflow
CMD ["airflow", "version"]

# Spark runs on a JVM: pyspark's bundled Spark needs Java 17 in the workers and in the submitting process.
FROM app AS spark
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

# One image for the API, the workbench and the pipeline. CPU torch only.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 WORKBENCH_HOME=/data
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY core core
COPY api api
COPY workbench workbench
COPY pages pages
COPY .streamlit .streamlit
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install -c constraints.txt -e . psycopg2-binary
VOLUME /data
EXPOSE 3000 8501
CMD ["workbench", "api", "--host", "0.0.0.0"]

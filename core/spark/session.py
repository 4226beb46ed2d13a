"""Starting (or joining) the SparkSession the engine runs on."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from core.settings import Settings

#: Environment the Python workers need to behave like the driver: the embedding model offline (no hub call
#: from an executor), one BLAS/OpenMP thread per worker (Spark runs one worker per core already), the
#: workspace's settings (model name, registry, embedding backend).
_WORKER_ENV = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               # pyspark 4.3 warns on every Arrow batch that it does not fully support pandas 3; measured equal here.
               "PYTHONWARNINGS": "ignore::FutureWarning"}


def default_master(settings: Settings | None = None) -> str:
    """``WORKBENCH_SPARK_MASTER`` when set, else ``local[*]`` (every core of this machine)."""
    from core.settings import get_settings

    return (settings or get_settings()).spark_master or "local[*]"


def spark_session(master: str | None = None, settings: Settings | None = None,
                  conf: dict[str, str] | None = None, app_name: str = "review-workbench") -> SparkSession:
    """A SparkSession on `master` (default `default_master`), configured for the engine.

    Arrow carries the batches between the JVM and the Python workers; Python workers are reused so each loads
    the model once; session time is UTC so timestamps round-trip unchanged. An existing session is returned as
    it is (its master cannot change): tests share one, a notebook keeps its own.

    Parameters
    ----------
    master
        Any Spark master URL: ``local[2]``, ``spark://host:7077``, ``k8s://...``, ``yarn``.
    settings
        Workspace settings; their ``WORKBENCH_*`` values are passed to the executors' environment.
    conf
        Extra Spark configuration (it wins over the defaults here).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as err:  # pragma: no cover - pyspark is a dependency
        from core.errors import WorkbenchError

        raise WorkbenchError(f"the Spark engine needs pyspark ({err}); pip install -c constraints.txt pyspark") from err
    import warnings

    from core.settings import get_settings

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    s = settings or get_settings()
    options: dict[str, Any] = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.python.worker.reuse": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "8",
        # The driver only ever holds aggregates and small samples (see core.spark.scoring).
        "spark.driver.maxResultSize": "256m",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
    }
    env = dict(_WORKER_ENV)
    env["WORKBENCH_HOME"] = str(s.home)
    env["WORKBENCH_EMBEDDING_MODEL"] = s.embedding_model
    env["WORKBENCH_EMBEDDING_BACKEND"] = s.embedding_backend
    if s.onnx_dir:
        env["WORKBENCH_ONNX_DIR"] = str(s.onnx_dir)
    for key in ("XDG_CACHE_HOME", "HOME"):
        if os.environ.get(key):
            env.setdefault(key, os.environ[key])
    for key, value in env.items():
        options[f"spark.executorEnv.{key}"] = value
    options.update(conf or {})
    # Local workers are started with PYSPARK_PYTHON (the conf alone is not read by a session started from
    # Python): this interpreter, so workers see this environment's packages. A cluster sets its own.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master or default_master(s)).appName(app_name)
    for key, value in options.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session

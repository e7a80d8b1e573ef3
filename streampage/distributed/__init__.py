"""Past one machine: a job's pages split into shards that run on a Dask cluster.

```python
from streampage.distributed import run_sharded

report = run_sharded(url, pages=streampage.PageNumber(stop=200_000), records="items",
                     sink=streampage.sinks.Parquet("out/items/"), job="items-2026-11")
assert report.complete, report.failures
```

Needs the ``dask`` extra (``pip install 'streampage[dask]'``); importing this module does
not, and ``run_shard`` (one shard, plain values in and out) never imports Dask, so that
another engine can drive it.
"""

from ._dask import run_sharded
from ._job import JobProgress, JobReport, ShardReport
from ._shard import JobControl, ShardSpec, run_shard

__all__ = [
    "JobControl",
    "JobProgress",
    "JobReport",
    "ShardReport",
    "ShardSpec",
    "run_shard",
    "run_sharded",
]

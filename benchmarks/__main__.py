"""Run every benchmark: ``python -m benchmarks`` (``make bench``). Results go to
``benchmarks/results/*.json``; each benchmark also prints its table."""

from benchmarks import bench_core, bench_llamacpp, bench_selector, bench_stop_reading

for bench in (bench_core, bench_selector, bench_stop_reading, bench_llamacpp):
    bench.main()

# The tidy table and the one-file report: pure functions of results/.


rule aggregate:
    input:
        cell_targets(),
        sweep_targets(),
    output:
        csv="results/summary.csv",
        parquet="results/summary.parquet",
    params:
        config=CONFIG_PATH,
    log:
        "results/logs/aggregate.log",
    shell:
        "servingbench aggregate --config {params.config:q} --results results > {log:q} 2>&1"


rule report:
    input:
        "results/summary.csv",
    output:
        report("report/index.html", caption="../docs/report-caption.rst", category="Report"),
    params:
        config=CONFIG_PATH,
    log:
        "results/logs/report.log",
    shell:
        "servingbench report --config {params.config:q} --results results --out {output:q} > {log:q} 2>&1"

# The tidy table and the one-file report: pure functions of results/.


# The GPU's copy bandwidth, measured once per results folder (servingbench.host.gpu_bandwidth), in the
# Transformers image (a torch program), before any server holds the GPU.
rule gpu_bandwidth:
    output:
        f"{RESULTS}/gpu-bandwidth.json",
    log:
        f"{RESULTS}/logs/gpu-bandwidth.log",
    priority: PREP_PRIORITY
    container:
        get_image("transformers-naive")
    shell:
        "servingbench gpu-bandwidth --out {output:q} > {log:q} 2>&1"


rule aggregate:
    input:
        cell_targets(),
        sweep_targets(),
        host_targets(),
    output:
        csv=str(sbr.summary_path(RESULTS)),
        parquet=str(sbr.summary_path(RESULTS, "parquet")),
    params:
        config=CONFIG_PATH,
    log:
        f"{RESULTS}/logs/aggregate.log",
    shell:
        "servingbench aggregate --config {params.config:q} --results " + RESULTS + " > {log:q} 2>&1"


rule report:
    input:
        str(sbr.summary_path(RESULTS)),
    output:
        report("report/index.html", caption="../docs/report-caption.rst", category="Report"),
    params:
        config=CONFIG_PATH,
    log:
        f"{RESULTS}/logs/report.log",
    shell:
        "servingbench report --config {params.config:q} --results " + RESULTS + " --out {output:q} > {log:q} 2>&1"

# Deterministic prompt sets, counted with each model's own tokenizer.


rule build_workload:
    input:
        model=sbc.model_dir("{model}"),
        trace=get_trace_file,
    output:
        TASK_WORKLOAD,
    wildcard_constraints:
        task=_alt(TASKS + ["context"]),
    params:
        workload=get_workload_params,
        config=CONFIG_PATH,
    log:
        str(sbr.log_path(TASK_WORKLOAD, RESULTS)),
    priority: PREP_PRIORITY
    container:
        get_image("transformers-naive")
    shell:
        "servingbench build-workload --config {params.config:q} --model {wildcards.model:q}"
        " --task {wildcards.task:q} --model-dir {input.model:q} --out {output:q} > {log:q} 2>&1"

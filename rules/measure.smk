# One measuring rule per (arm, model) and family: its cells, its sweeps (concurrency, context)
# and its capacity searches (per task, servingbench.runtime.capacity). Each runs in its arm's framework
# image (container: is static), and its priority keeps the jobs that share one server back to back.

# family: (its result file as a wildcard pattern, its workload, its spec)
MEASURED = {
    "measure": (sbr.cell_path(RESULTS, "{arm}", "{model}", "{task}", "{mode}"), TASK_WORKLOAD, get_cell_spec),
    "sweep": (sbr.sweep_path(RESULTS, "{arm}", "{model}", "{sweep}"), get_sweep_workload, get_sweep_spec),
    "capacity": (sbr.capacity_path(RESULTS, "{arm}", "{model}", "{task}"), TASK_WORKLOAD, get_capacity_spec),
}

for (_arm, _model), _order in SERVER_ORDER.items():
    for _family, (_result, _workload, _spec) in MEASURED.items():

        rule:
            name:
                f"{_family}_{_arm}_{_model}".replace("-", "_").replace(".", "_")
            input:
                workload=_workload,
                model=sbc.model_dir("{model}"),
                weights=get_served_weights,
            output:
                result=str(_result),
                requests=str(sbr.requests_path(_result)),
            wildcard_constraints:
                arm=re.escape(_arm),
                model=re.escape(_model),
            params:
                spec=_spec,
            log:
                str(sbr.log_path(_result, RESULTS)),
            priority: get_priority(_arm, _model)
            resources:
                gpu=1,
            container:
                get_image(_arm)
            shell:
                "servingbench run-cell --spec {params.spec:q} --workload {input.workload:q}"
                " --out {output.result:q} --results " + RESULTS + " 2>&1 | tee {log:q}"

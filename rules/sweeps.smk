# The concurrency sweep and the context-length sweep per (arm, model), and the capacity search
# per (arm, model, task) (servingbench.capacity).

for (_arm, _model), _order in SERVER_ORDER.items():

    rule:
        name:
            f"sweep_{_arm}_{_model}".replace("-", "_").replace(".", "_")
        input:
            workload=get_sweep_workload,
            model="models/{model}",
            weights=get_served_weights,
        output:
            result="results/sweeps/{arm}/{model}/{sweep}.json",
            requests="results/sweeps/{arm}/{model}/{sweep}.requests.jsonl",
        wildcard_constraints:
            arm=re.escape(_arm),
            model=re.escape(_model),
            sweep="concurrency|context",
        params:
            spec=get_sweep_spec,
        log:
            "results/logs/sweeps/{arm}/{model}/{sweep}.log",
        priority: get_priority(_arm, _model)
        resources:
            gpu=1,
        container:
            get_image(_arm)
        shell:
            "servingbench run-cell --spec {params.spec:q} --workload {input.workload:q}"
            " --out {output.result:q} --results results 2>&1 | tee {log:q}"

    rule:
        name:
            f"capacity_{_arm}_{_model}".replace("-", "_").replace(".", "_")
        input:
            workload="results/workloads/{model}/{task}.jsonl",
            model="models/{model}",
            weights=get_served_weights,
        output:
            result="results/sweeps/{arm}/{model}/capacity-{task}.json",
            requests="results/sweeps/{arm}/{model}/capacity-{task}.requests.jsonl",
        wildcard_constraints:
            arm=re.escape(_arm),
            model=re.escape(_model),
        params:
            spec=get_capacity_spec,
        log:
            "results/logs/sweeps/{arm}/{model}/capacity-{task}.log",
        priority: get_priority(_arm, _model)
        resources:
            gpu=1,
        container:
            get_image(_arm)
        shell:
            "servingbench run-cell --spec {params.spec:q} --workload {input.workload:q}"
            " --out {output.result:q} --results results 2>&1 | tee {log:q}"

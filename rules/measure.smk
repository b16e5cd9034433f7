# One measuring rule per (arm, model): each runs in its arm's framework image (container: is
# static), and its priority keeps the cells that share one server back to back.

for (_arm, _model), _order in SERVER_ORDER.items():

    rule:
        name:
            f"measure_{_arm}_{_model}".replace("-", "_").replace(".", "_")
        input:
            workload="results/workloads/{model}/{task}.jsonl",
            model="models/{model}",
            weights=get_served_weights,
        output:
            result="results/cells/{arm}/{model}/{task}/{mode}.json",
            requests="results/cells/{arm}/{model}/{task}/{mode}.requests.jsonl",
        wildcard_constraints:
            arm=re.escape(_arm),
            model=re.escape(_model),
        params:
            spec=get_cell_spec,
        log:
            "results/logs/cells/{arm}/{model}/{task}/{mode}.log",
        priority: get_priority(_arm, _model)
        resources:
            gpu=1,
        container:
            get_image(_arm)
        shell:
            "servingbench run-cell --spec {params.spec:q} --workload {input.workload:q}"
            " --out {output.result:q} --results results 2>&1 | tee {log:q}"

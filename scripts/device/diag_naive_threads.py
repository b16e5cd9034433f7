"""Does the first ``generate`` in a new thread cost more? (It did on the H100: see below.)

    python3 scripts/device/diag_naive_threads.py MODEL_DIR      (a dummy dir with weights)

Prints ms per output token for series of 50-token ``generate`` calls, each series in a new
thread or in the main thread. Seen on an H100 (torch 2.11, transformers 5.17, gpt2 dummy):
    fresh thread sampling x10 [96.8, 12.2, 11.8, 14.5, 14.5, 13.5, 14.7, 14.5, 14.3, 14.4]
    2nd fresh thread sampling x4 [87.8, 11.8, 15.0, 12.8]
    fresh thread greedy x4 [82.3, 14.1, 13.2, 13.6]
    main sampling x6 [85.7, 12.8, 13.7, 12.6, 11.7, 11.1]
    main top_p=1.0 x3 [11.3, 12.0, 12.2]
The naive server therefore runs every request on one worker thread.
"""

import sys
import threading
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float16).to("cuda").eval()


def run(n_prompt: int, new: int, **kw) -> float:
    ids = torch.randint(300, 5000, (1, n_prompt), device="cuda")
    args = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                do_sample=True, temperature=0.9, top_p=0.95, pad_token_id=tok.eos_token_id)
    args.update(kw)
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.inference_mode():
        model.generate(**args)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) * 1000 / new


def series(label: str, n: int, **kw) -> None:
    print(label, [round(run(40, 50, **kw), 1) for _ in range(n)], flush=True)


for label, n, kw in [("fresh thread sampling x10", 10, {}), ("2nd fresh thread sampling x4", 4, {}),
                     ("fresh thread greedy x4", 4, {"do_sample": False})]:
    t = threading.Thread(target=series, args=(label, n), kwargs=kw)
    t.start()
    t.join()
series("main sampling x6", 6)
series("main top_p=1.0 x3", 3, top_p=1.0)

"""Why do the naive server's decode steps on the H100 vary 4-6x between stretches of seconds?

    python3 scripts/device/diag_step_jitter.py [SECONDS] [--poll]

Runs a gpt2-sized model with random weights (no hub needed) through ``generate``, as the naive
server does, for SECONDS (default 90): 60-token calls, alternating a 40- and a 500-token prompt,
with and without a streamer read by a second thread (the server's handler). For each call it
prints ms per token, the host's CPU steal and busy share over the call (from /proc/stat), and the
GPU's SM clock (nvidia-smi). If slow calls line up with steal or busy, the host is the cause.
With --poll, every other quarter of the run has ``nvidia-smi -lms 100`` polling the GPU the way
the kit's monitor does (memory, utilization, power at 10 Hz); a per-phase summary follows.

Seen on an H100 (torch 2.11, transformers 5.17), 2026-11-24: 8-15 ms per token throughout, the
same for 40- and 500-token prompts, with and without a streamer; CPU steal 0 %, SM clock steady
at 1980 MHz. Quarters of 120 s: p50 9.2 / 11.6 polled / 9.1 / 10.2 polled ms per token: NVML
polling costs 10-25 %, not the 4-6x stretches seen in the kit's naive cells (50-80 ms per token
on gpt2 in some requests). Those are not explained yet.
"""

import subprocess
import sys
import threading
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, TextIteratorStreamer

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SECONDS = float(ARGS[0]) if ARGS else 90.0
POLL = "--poll" in sys.argv


def cpu_times() -> list[int]:
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def share(a: list[int], b: list[int]) -> tuple[float, float]:
    d = [y - x for x, y in zip(a, b)]
    total = sum(d) or 1
    idle = d[3] + d[4]
    steal = d[7] if len(d) > 7 else 0
    return 100.0 * steal / total, 100.0 * (total - idle) / total


def sm_clock() -> str:
    out = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader"],
                         capture_output=True, text=True)
    return out.stdout.strip()


class Tok:
    """Just enough tokenizer for TextIteratorStreamer: token ids as text."""

    def decode(self, ids, **_kw) -> str:
        return " ".join(str(i) for i in ids)


model = GPT2LMHeadModel(GPT2Config()).to("cuda", torch.float16).eval()


def call(n_prompt: int, stream: bool) -> float:
    ids = torch.randint(300, 5000, (1, n_prompt), device="cuda")
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=60, min_new_tokens=60,
              do_sample=True, temperature=0.5, top_p=0.9, pad_token_id=50256)
    reader = None
    if stream:
        streamer = TextIteratorStreamer(Tok(), skip_prompt=True)
        kw["streamer"] = streamer
        reader = threading.Thread(target=lambda: [None for _ in streamer])
        reader.start()
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.inference_mode():
        model.generate(**kw)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) * 1000 / 60
    if reader:
        reader.join()
    return ms


start = time.time()
end = start + SECONDS
phases: dict[str, list[float]] = {}
print(f"{'ms/token':>9} {'prompt':>6} {'stream':>6} {'steal%':>6} {'busy%':>6}  sm clock, power", flush=True)


def loop() -> None:
    call(40, False)  # first call in a thread pays the warm-up (diag_naive_threads.py)
    i, poller = 0, None
    while time.time() < end:
        quarter = int(4 * (time.time() - start) / SECONDS)
        polling = POLL and quarter % 2 == 1
        if polling and poller is None:
            poller = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used,utilization.gpu,power.draw",
                                       "--format=csv", "-lms", "100"], stdout=subprocess.DEVNULL)
        if not polling and poller is not None:
            poller.terminate()
            poller.wait()
            poller = None
        n, stream = (40, 500)[i % 2], bool((i // 2) % 2)
        a = cpu_times()
        ms = call(n, stream)
        steal, busy = share(a, cpu_times())
        phases.setdefault(f"quarter {quarter + 1}{' polled' if polling else ''}", []).append(ms)
        print(f"{ms:9.1f} {n:6d} {stream!s:>6} {steal:6.1f} {busy:6.1f}  {sm_clock()}", flush=True)
        i += 1
    if poller is not None:
        poller.terminate()
    for name, v in phases.items():
        v.sort()
        print(f"{name}: {len(v)} calls, ms/token p50 {v[len(v) // 2]:.1f}, max {v[-1]:.1f}")


t = threading.Thread(target=loop)  # all calls on one long-lived thread, as the server does
t.start()
t.join()

"""Co-PLMs phase costs on the shipped config: seconds per call of one edge phase (an SLM alone,
SLM <-> proxy mutual learning) and one cloud phase (LLM <-> proxy, LLM alone), first call
(compile included) and warm. Prints one JSON line per phase.

  python benchmarks/coplms_phases.py [--edge-steps 200] [--cloud-steps 80]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import emit, machine

from configs.coplms_domains import get_config
from dacl.build import build_task
from dacl.coplms import job


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--edge-steps", type=int, default=200)
  ap.add_argument("--cloud-steps", type=int, default=80)
  a = ap.parse_args()
  c = get_config()
  cc = c.coplms
  tasks = [build_task(t) for t in cc.domains]
  data = job.domain_data(c, tasks, 0)
  r = job.Runner(c, data, 0)
  E, C = a.edge_steps, a.cloud_steps
  llm = job.build_party("llm", cc.llm, 0, 10 * C, c.optim)
  dpm = job.build_party("dpm", cc.dpm, 0, 10 * E, c.optim)
  pub = lambda i: r.public_stream.batch(i)
  phases = []
  for k, sc in enumerate(cc.slms):
    slm = job.build_party(sc.name, sc, 0, 10 * E, c.optim)
    priv = lambda i, k=k: r.private_streams[k].batch(i)
    phases.append((f"edge_alone_{sc.name}", lambda s=slm, p=priv, o=0: r.alone(s, p, E, o), E))
    phases.append((f"edge_pair_{sc.name}",
                   lambda s=slm, p=priv: r.pair(s, dpm, p, E, 0, alpha_a=1.0, alpha_b=1.0), E))
  phases.append(("cloud_pair_llm", lambda: r.pair(llm, dpm, pub, C, 0, alpha_a=1.0, alpha_b=1.0), C))
  phases.append(("cloud_alone_llm", lambda: r.alone(llm, pub, C, 0), C))
  for name, fn, steps in phases:
    times = []
    for _ in range(2):
      t = time.perf_counter()
      fn()
      times.append(time.perf_counter() - t)
    emit(bench="coplms_phase", phase=name, steps=steps, first_s=round(times[0], 2),
         warm_s=round(times[1], 2), warm_ms_per_step=round(1000 * times[1] / steps, 2),
         machine=machine())


if __name__ == "__main__":
  main()

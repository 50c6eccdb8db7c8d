"""The end-to-end benchmark harness behind `python -m bench`.

Processes, all on 127.0.0.1, each bounded in requests and seconds:
  upstream.py   a fast fake OpenAI/Anthropic upstream (raw asyncio protocol, precomputed bytes)
  servers.py    the servers under test: direct (no proxy), meshproxy's built-in server, uvicorn,
                granian, the no-accounting variant (noaccount.py) and LiteLLM's pass-through
  loadgen.py    the load generator (raw-socket HTTP/1.1 keep-alive client)
  micro.py      in-process micro rows (token verification, usage machines, pricing)
  runner.py     orchestration, /proc sampling (procs.py), the table and bench/results/latest.json
"""

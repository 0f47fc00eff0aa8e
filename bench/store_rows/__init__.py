"""The rows of bench/store.py: the measured client walk (`walk`) and its child process
(`child`, `checks`), the Redis side (`redisside`), the PyStator baseline's venv (`pystator`),
the row list (`rows`), one measurement (`measure`), the rounds (`rounds`), the report
(`report`) and the profile (`profile`).

Owns what the state-store benchmark measures and checks. Must not start or stop the Redis
server (bench/store.py does), nor hold mechanics another benchmark could use (`harness`).
"""

"""The development stack: throwaway PostgreSQL and Mosquitto, bridge and watchdog processes, test traffic.

One implementation, used by the test suite, the benchmarks and
scripts/local-stack: real servers from local binaries on free ports on
127.0.0.1, each in its own folder, started and stopped by PID.
"""

"""The faust agents: the thin shell around the pure code in streams/.

``agents.worker.build_worker`` builds one :class:`agents.runtime.Runtime` and registers
every agent on it, explicitly: decide, the timer ticker, the cron scheduler, the daily
digest, the sinks and the metrics monitor.
"""

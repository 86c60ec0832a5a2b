"""The network-namespace lab, the demo and the small processes they run.

``netns`` (namespaces via ``ip netns``), ``topology`` (the lab, the only pyroute2
user), ``tools`` (listeners and probes run inside namespaces), ``processes`` (the
daemon and a syslog receiver as child processes), ``mailservers`` (the provider MTA
and external MX, the only aiosmtpd user), ``demo``. It drives ``op25b run`` as a
process and never imports the daemon or kernel internals.
"""

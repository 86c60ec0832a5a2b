"""``op25b run``: the long-running process around the kernel seam and the data plane.

``main`` (start-up, followers, exit codes), ``worker`` (the select loop of one queue),
``reload`` (policy reloads off the verdict path), ``signals`` (flags only),
``syslog`` and ``sdnotify`` (outputs), ``abuselog`` (the abuse-log file),
``countersline`` (the counters' syslog form). It talks to netfilter only through
``op25b.kernel.seam.Kernel``.
"""

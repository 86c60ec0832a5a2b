"""The abuse desk's and the change reviewer's offline tools.

``abuseread`` (reading abuse logs, compressed or not), ``botscore`` (per-source
summaries and the bot score), ``desk`` (``op25b report``), ``chart`` (the only
matplotlib user), ``replay`` (pcap through the policy). Uses the policy and data-plane
layers; never the daemon or the kernel.
"""

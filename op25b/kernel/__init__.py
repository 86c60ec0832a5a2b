"""Everything that touches netfilter: rules, ipsets, the queue binding, the verdict cache.

``ruletext`` and ``setcontents`` are pure (policy -> restore text / set contents);
``commands`` runs iptables/ipset; ``rules`` and ``ipsets`` install, swap and remove;
``nfq`` is the only ``netfilterqueue`` user; ``blockcache`` the kernel verdict cache;
``queuestats`` reads the kernel's queue counters. The daemon reaches all of it
through one small interface, ``seam.Kernel`` (``seam.SystemKernel`` is the real one).
"""

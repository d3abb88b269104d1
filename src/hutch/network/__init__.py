"""Container networks (docs/networks.md): bridges, veths, leases, the nftables
table, the per-network daemon (DNS, the ::1 port proxy), CNI and the rootless
tools.  Nothing is imported here: each verb takes only the modules it uses.
(A new network namespace's loopback is brought up by hutch.namespaces.)"""

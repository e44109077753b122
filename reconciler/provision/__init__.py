"""Node provisioners: how a Workspace gets its GPU nodes (NodeClaims, AKS agent pools, BYO)."""

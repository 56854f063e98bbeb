"""Head plugins: the hook spec, the registry that finds heads, the TaskHead contract and input kinds."""

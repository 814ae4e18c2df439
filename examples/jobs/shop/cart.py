def fetch(items): return list(items)

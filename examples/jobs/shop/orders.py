def fetch(orders): return sorted(orders)

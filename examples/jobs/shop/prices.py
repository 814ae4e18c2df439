def fetch(prices): return {name: float(p) for name, p in prices.items()}

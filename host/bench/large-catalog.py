#!/usr/bin/env python3
"""Upserts a seeded catalog of N items ("1".."N", a random model's external
ids) with five attributes each into a tenant of a running `edgerec serve`,
in pages under the 1 MiB body limit over one keep-alive connection, then
activates the three-stage pipeline of issue 23's benchmark (in-stock, boost,
diversity), with `retrieve.where stock gt 0` when EDGEREC_BENCH_FILTER=1.

    large-catalog.py BASE_URL TENANT API_KEY N

Attributes: price (f64), stock (i64, 0 for 90 % of items), on_sale (bool),
brand (one of 1,000 strings), tags (1 to 3 of 20 strings).
"""
import http.client
import json
import os
import random
import sys
import urllib.parse

OPERATOR = "bench-operator"


def main():
    base, tenant, key, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    url = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port)
    rng = random.Random(7)
    tags = [f"tag-{t}" for t in range(20)]

    def send(method, path, body, token):
        conn.request(method, path, json.dumps(body),
                     {"Authorization": f"Bearer {token}", "content-type": "application/json"})
        response = conn.getresponse()
        text = response.read()
        if response.status != 200:
            sys.exit(f"{method} {path}: {response.status} {text[:300]!r}")

    page = []
    for item in range(1, count + 1):
        page.append({"id": str(item), "attributes": {
            "price": round(rng.uniform(1, 500), 2),
            "stock": rng.randint(1, 40) if rng.random() < 0.1 else 0,
            "on_sale": rng.random() < 0.2,
            "brand": f"brand-{rng.randrange(1000)}",
            "tags": rng.sample(tags, rng.randint(1, 3)),
        }})
        if len(page) == 1000 or item == count:
            send("PUT", f"/v1/tenants/{tenant}/catalog/items", {"items": page}, key)
            page = []
    pipeline = {"stages": [
        {"plugin": "in-stock", "config": {"attribute": "stock", "min": 1}},
        {"plugin": "boost", "config": {"rules": [
            {"name": "sale", "attribute": "on_sale", "op": "eq", "value": True, "action": {"multiply": 1.2}},
            {"name": "clearance", "attribute": "tags", "op": "contains", "value": "tag-3", "action": "bury"}]}},
        {"plugin": "diversity", "config": {"attribute": "brand", "max_per_group": 2}},
    ]}
    if os.environ.get("EDGEREC_BENCH_FILTER") == "1":
        pipeline["retrieve"] = {"where": [{"attribute": "stock", "op": "gt", "value": 0}]}
    send("PUT", f"/v1/tenants/{tenant}/pipeline", pipeline, OPERATOR)


if __name__ == "__main__":
    main()

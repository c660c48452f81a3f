"""The maas web console: models and their lineage, live training curves, queues and workers,
and a page to try a model and see why it answered as it did.

A client of the public gRPC API only (through `maas.AsyncClient`, never Redis), so it runs
beside a gateway or anywhere else: server-rendered pages (Starlette + Jinja2, autoescaped),
a little vanilla JavaScript for the live curves (server-sent events fed by WatchTrainingJob),
the drawing canvas and the heat map, nothing fetched from a CDN.

With auth on, each user logs in with their own API key, kept in an HttpOnly, SameSite=Strict
cookie and sent to the gateway with each of their calls: the gateway decides what they see.
The console holds no key of its own.

    maas console --target 127.0.0.1:50051 --port 8265   # or `maas up`, which starts one
"""

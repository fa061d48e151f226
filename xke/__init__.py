"""xke: cross-lingual knowledge editing for large language models.

Subpackages read as a map of the field:

- :mod:`xke.data`      benchmark schema (:class:`~xke.data.schema.EditCase`), loaders
- :mod:`xke.world`     the toy multilingual world and its tiny model
- :mod:`xke.models`    model loading, prompt formatting, per-architecture layer names
- :mod:`xke.methods`   editing methods behind one interface (:class:`~xke.methods.base.EditMethod`)
- :mod:`xke.memory`    persistent edit memory and retrievers
- :mod:`xke.train`     X-KDE data construction, XE-IT and TL-PO
- :mod:`xke.eval`      metrics, protocols, the evaluation runner and reports
- :mod:`xke.analysis`  geometry of edit deltas, per-layer language separation
"""

__version__ = "0.1.0"

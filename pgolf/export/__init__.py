"""The export driver: trained weights → quantized, compressed artifact (and the planner before training).

It sits above both :mod:`pgolf.quant` (grids, GPTQ, LQER, calibration) and :mod:`pgolf.artifact`
(the container, codecs, streams, byte accounting), which never import it:

- :mod:`pgolf.export.driver`  export schemes, ``export_model``, ``load_model_state``, calibration for export;
- :mod:`pgolf.export.search`  the byte-budget search's measurements (exact stream bytes per tensor group);
- :mod:`pgolf.export.solve`   its plan: one option per group under the budget, packed and fitted;
- :mod:`pgolf.export.planner` artifact bytes of a configuration before training (``pgolf info``).
"""

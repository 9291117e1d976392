"""What the routes share: the plugins, the settings, the model cache, the worker, the
selected model, and how a request becomes a :class:`~t2i_server.jobs.Job`."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from t2i.request import REQUEST_FIELDS, GenerationRequest, RequestError
from t2i_server.cache import ModelCache, model_key
from t2i_server.checkpoints import Checkpoint, ModelsFolder, scan
from t2i_server.controlnets import ControlNetFile, find_controlnet, scan_controlnets
from t2i_server.jobs import Job, Worker
from t2i_server.settings import ServeSettings
from t2i_server.vaes import AUTOMATIC, NONE, VaeFile, find_vae, scan_vaes

DEFAULT_RECIPE_ENV = "T2I_DEFAULT_RECIPE"


@attrs.frozen
class Selection:
    """A model a request names: the recipe that runs it with ``options``, and its title
    (the recipe's name, or a checkpoint's ``name [hash]``)."""

    recipe: str
    options: dict[str, Any]
    title: str
    checkpoint: Checkpoint | None = None


FAMILY_LABELS = {"diffusion": "diffusion", "tokens": "autoregressive", "generator": "GAN"}


class Server:
    """One server's state (``app.state.t2i``)."""

    def __init__(self, settings: ServeSettings, manager: Any) -> None:
        self.settings = settings
        self.manager = manager
        self.cache = ModelCache(settings.max_models)
        self.worker = Worker(self.cache)
        self._info: dict[tuple, dict[str, Any]] = {}
        self._info_lock = threading.Lock()
        self.models = ModelsFolder(None)
        self.refresh_models()
        self.vaes: list[VaeFile] = []
        self.refresh_vaes()
        self.controlnets: list[ControlNetFile] = []
        self.refresh_controlnets()
        self.current_vae = AUTOMATIC
        """The ``sd_vae`` setting: ``Automatic`` (each checkpoint's own) or a VAE's name."""
        self.clip_skip = 1
        """The ``CLIP_stop_at_last_layers`` setting (A1111's clip skip; 1: the last layer)."""
        self.current = (
            self.select(settings.recipe, "recipe").title
            if settings.recipe
            else (self.default_recipe())
        )
        """The selected model's title (``sd_model_checkpoint``): a recipe or a checkpoint."""

    def refresh_models(self) -> ModelsFolder:
        """Rescan the models folder (``--ckpt-dir``)."""
        self.models = scan(self.settings.models_dir, lambda n: self.registry.has("recipe", n))
        return self.models

    def refresh_vaes(self) -> list[VaeFile]:
        """Rescan the VAE folder (``--vae-dir``)."""
        self.vaes = scan_vaes(self.settings.vae_dir, allow_pickle=self.settings.allow_pickle)
        return self.vaes

    def refresh_controlnets(self) -> list[ControlNetFile]:
        """Rescan the ControlNet folder (``--controlnet-dir``)."""
        allow = self.settings.allow_pickle
        self.controlnets = scan_controlnets(self.settings.controlnet_dir, allow_pickle=allow)
        return self.controlnets

    def controlnet_named(self, name: Any, field: str) -> ControlNetFile:
        """The ControlNet a unit's ``model`` names (:func:`find_controlnet`).

        Raises:
            RequestError: naming ``field``: no such ControlNet (the folder's listed).
        """
        found = find_controlnet(self.controlnets, name) if isinstance(name, str) else None
        if found is None:
            if self.settings.controlnet_dir is None:
                raise RequestError(field, f"no ControlNet {name!r}: no --controlnet-dir given")
            names = ", ".join(c.title for c in self.controlnets) or "none"
            raise RequestError(field, f"no ControlNet {name!r}; ControlNets: {names}")
        return found

    def controlnet_options(
        self, selection: Selection, scripts: Any, init_image: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(recipe options, request fields)`` of a request's ``alwayson_scripts``
        ControlNet units (:mod:`t2i_server.controlnets`): ``controlnet=[paths]`` and unit
        ``k``'s fields (``control_image``, ``control_weight_1`` ...); nothing without an
        enabled unit. ``init_image``: img2img's, the image of a unit that sends none.

        Raises:
            RequestError: a unit that cannot be used, or units for a model whose recipe
                takes no ``controlnet`` option.
        """
        from t2i_server.controlnets import FIELD, enabled_units, parse_unit

        enabled = enabled_units(scripts)
        if not enabled:
            return {}, {}
        if not self.recipe_takes(selection.recipe, "controlnet"):
            raise RequestError(
                FIELD,
                f"model {selection.title!r} takes no ControlNet (only Stable Diffusion "
                "checkpoints, recipe ldm, do): disable the units or pick such a model",
            )
        from t2i_ldm.controlnet_apply import unit_fields

        parsed = [parse_unit(u, f"{FIELD}[{i}]", self.controlnet_named, init_image)
                  for i, u in enabled]  # fmt: skip
        units = [u for u in parsed if not u.controlnet.is_ip_adapter]
        options, fields = self._ip_unit(selection, [u for u in parsed if u not in units])
        for k, unit in enumerate(units):
            bound = unit_fields(k).items()
            fields.update({name: unit.params[p] for name, p in bound if p in unit.params})
        if units:
            options["controlnet"] = [str(u.controlnet.path) for u in units]
        if any(u.controlnet.pickle for u in parsed):
            options["allow_pickle"] = True
        return options, fields

    def _ip_unit(self, selection: Selection, units: list) -> tuple[dict, dict]:
        """``ip_adapter=`` and ``ip_image`` / ``ip_scale`` of an IP-Adapter unit (the
        extension runs IP-Adapters as ControlNet units; at most one)."""
        from t2i_server.controlnets import FIELD

        if not units:
            return {}, {}
        if len(units) > 1 or not self.recipe_takes(selection.recipe, "ip_adapter"):
            why = "one IP-Adapter unit at a time" if len(units) > 1 else (
                f"model {selection.title!r} takes no IP-Adapter")  # fmt: skip
            raise RequestError(FIELD, why)
        unit = units[0]
        fields = {"ip_image": unit.params["image"]}
        if "weight" in unit.params:
            fields["ip_scale"] = unit.params["weight"]
        return {"ip_adapter": str(unit.controlnet.path)}, fields

    def vae_named(self, name: Any, field: str = "sd_vae") -> VaeFile | None:
        """The VAE an ``sd_vae`` value names; None for ``Automatic`` / ``None``.

        Raises:
            RequestError: naming ``field``: no such VAE (the choices listed).
        """
        if name in (None, AUTOMATIC, NONE):
            return None
        found = find_vae(self.vaes, name) if isinstance(name, str) else None
        if found is None:
            names = ", ".join([AUTOMATIC, NONE, *(v.name for v in self.vaes)])
            where = "" if self.settings.vae_dir else " (no --vae-dir given)"
            raise RequestError(field, f"no VAE {name!r}{where}; VAEs: {names}")
        return found

    def vae_options(
        self, selection: Selection, asked: Any = None, setting: Any = None, field: str = "sd_vae"
    ) -> dict[str, Any]:
        """The recipe options that put the chosen VAE into ``selection``'s pipeline:
        ``asked`` (a request's own ``sd_vae``), else ``setting`` (an ``sd_vae`` being set),
        else the current setting. A model whose recipe takes no ``vae`` ignores a setting; a
        request that names a VAE for it is refused."""
        chosen = asked if asked is not None else setting
        name = self.current_vae if chosen is None else chosen
        vae = self.vae_named(name, field)
        if vae is None and name != NONE:
            return {}  # Automatic: the recipe's own rule (ldm: a VAE named after the file)
        if not self.recipe_takes(selection.recipe, "vae"):
            if asked is None or vae is None:
                return {}
            raise RequestError(
                field,
                f"model {selection.title!r} takes no VAE (only Stable Diffusion checkpoints, "
                "recipe ldm, do): leave sd_vae out or pick such a model",
            )
        if vae is None:
            return {"vae": NONE}  # the checkpoint's own, even with a VAE named after it
        return {"vae": str(vae.path), **({"allow_pickle": True} if vae.pickle else {})}

    def clip_skip_options(self, selection: Selection, asked: Any = None) -> dict[str, Any]:
        """``clip_skip=`` for a recipe that takes it, from ``asked`` (a request's or a new
        setting's ``CLIP_stop_at_last_layers``) or the setting; 1 (the default) adds nothing,
        and a model without the option ignores it, as A1111 applies it to SD only.

        Raises:
            RequestError: ``CLIP_stop_at_last_layers`` that is not an integer >= 1.
        """
        value = self.clip_skip if asked is None else checked_clip_skip(asked)
        if value == 1 or not self.recipe_takes(selection.recipe, "clip_skip"):
            return {}
        return {"clip_skip": value}

    def recipe_takes(self, recipe: str, option: str) -> bool:
        """Whether recipe ``recipe``'s factory has the option ``option`` (its signature)."""
        import inspect

        factory = self.registry.get("recipe", recipe).factory
        return option in inspect.signature(factory).parameters

    def embedding_options(self, selection: Selection) -> dict[str, Any]:
        """``embeddings_dir=`` the embeddings folder for a recipe that takes it (with
        ``allow_pickle`` when the server allows pickles and the folder holds one)."""
        folder = self.settings.embeddings_dir
        if folder is None or not self.recipe_takes(selection.recipe, "embeddings_dir"):
            return {}
        from t2i_server.embeddings import holds_pickles

        pickles = self.settings.allow_pickle and holds_pickles(folder)
        return {"embeddings_dir": str(folder), **({"allow_pickle": True} if pickles else {})}

    @property
    def registry(self) -> Any:
        return self.manager.registry

    def default_recipe(self) -> str:
        """``$T2I_DEFAULT_RECIPE``, else the first recipe marked default, else the first."""
        chosen = os.environ.get(DEFAULT_RECIPE_ENV)
        if chosen:
            return self.registry.get("recipe", chosen).name
        entries = self.registry.entries("recipe")
        defaults = [e for e in entries if e.default]
        if not entries:
            raise RuntimeError("no recipe is installed: install a family plugin")
        return (defaults or entries)[0].name

    def recipe_name(self, name: str, field: str = "sd_model_checkpoint") -> str:
        """The recipe that runs model ``name`` (see :meth:`select`)."""
        return self.select(name, field).recipe

    def select(self, name: str, field: str = "sd_model_checkpoint") -> Selection:
        """The model called ``name``: a registered recipe (A1111 titles ``NAME [hash]`` too),
        else a checkpoint of the models folder (its title, name, model name or path).

        Raises:
            RequestError: naming ``field``: no such model, a skipped (unusable) checkpoint
                with the reason, or a ``.ckpt`` without ``--allow-pickle``.
        """
        if not isinstance(name, str) or not name.strip():
            raise RequestError(field, f"must name a recipe or checkpoint, got {name!r}")
        text = name.strip()
        for candidate in (text, text.split(" [")[0]):
            if self.registry.has("recipe", candidate):
                recipe = self.registry.get("recipe", candidate).name
                return Selection(recipe, {}, recipe)
        ckpt = self.models.find(text)
        if ckpt is not None:
            if ckpt.layout.pickle and not self.settings.allow_pickle:
                raise RequestError(
                    field,
                    f"{ckpt.title} is a pickle checkpoint (.ckpt), which can run code when "
                    "loaded: convert it to safetensors, or restart with --allow-pickle",
                )
            return Selection(ckpt.recipe, ckpt.options(), ckpt.title, ckpt)
        why = self.models.why_skipped(text)
        if why is not None:
            raise RequestError(field, f"checkpoint {why}, so it cannot be loaded")
        names = [e.name for e in self.registry.entries("recipe")]
        names += [c.title for c in self.models.checkpoints]
        raise RequestError(field, f"no recipe or checkpoint {name!r}; models: {', '.join(names)}")

    def family_of(self, selection: Selection) -> str:
        """The family (model contract) of a selected model, without loading it."""
        if selection.checkpoint is not None:
            return selection.checkpoint.family
        return self.recipe_info(selection.recipe).get("family") or ""

    def recipe_info(self, name: str, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        """A recipe's request fields, defaults and family, from its graph (no sampling).

        With ``checkpoint`` (a models-folder entry), the recipe is built with that
        checkpoint's options, as a job on it would be: a recipe such as ``dalle-shapes``
        reads its sizes from the folder, and ``ldm`` cannot build without one. Cached by
        (recipe, checkpoint path, checkpoint hash), so a rescanned, changed file is described
        anew."""
        key = (name,) if checkpoint is None else (name, str(checkpoint.path), checkpoint.sha256)
        with self._info_lock:  # one build per model, though routes run in threads
            if key not in self._info:
                self._info[key] = self._describe(name, checkpoint)
            return self._info[key]

    def model_info(self, name: str, field: str = "model") -> dict[str, Any]:
        """:meth:`recipe_info` of the model called ``name`` (a recipe or a checkpoint's
        title, see :meth:`select`); a checkpoint's ``name`` is its title, with ``recipe``
        and ``checkpoint`` (its ``/sdapi/v1/sd-models`` entry) beside it.

        Raises:
            RequestError: naming ``field``, as :meth:`select`.
        """
        chosen = self.select(name, field)
        if chosen.checkpoint is None:
            return self.recipe_info(chosen.recipe)
        info = self.recipe_info(chosen.recipe, chosen.checkpoint)
        return {
            **info,
            "name": chosen.title,
            "recipe": chosen.recipe,
            "checkpoint": chosen.checkpoint.as_a1111(),
            "default": False,
            "aliases": [],
        }

    def _describe(self, name: str, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
        entry = self.registry.get("recipe", name)
        info: dict[str, Any] = {
            "name": entry.name,
            "description": entry.description,
            "plugin": entry.plugin,
            "default": bool(entry.default),
            "aliases": list(entry.aliases),
        }
        try:
            recipe = entry.create(**(checkpoint.options() if checkpoint else {}))
        except Exception as exc:  # a recipe that needs options (a checkpoint) to build
            return {**info, "error": f"{type(exc).__name__}: {exc}", "fields": [], "family": ""}
        contracts = set()
        for graph in (recipe.graph, recipe.img2img_graph):
            for node in graph or ():
                cls = self.registry.get_node_type(node.type)
                if getattr(cls, "model_contract", None):
                    contracts.add(cls.model_contract)
        family = sorted(contracts)[0] if len(contracts) == 1 else ",".join(sorted(contracts))
        bound = set(recipe.bindings) | set(recipe.img2img_bindings or {})
        return {
            **info,
            "family": family,
            "family_label": FAMILY_LABELS.get(family, family),
            "fields": sorted(bound),
            "defaults": _defaults(recipe, bound),
            "img2img": recipe.img2img_graph is not None,
            "size_multiple": recipe.size_multiple,
            "model_name": recipe.model_name or entry.name,
            "model_hash": recipe.model_hash or None,
        }

    # -- jobs ----------------------------------------------------------------------------
    def make_job(
        self,
        *,
        recipe: str | None = None,
        options: Mapping[str, Any] | None = None,
        graph: Mapping[str, Any] | None = None,
        prompt: str = "",
        fields: Mapping[str, Any] | None = None,
        mode: str = "generate",
        axes: list[str] | None = None,
        vae: str | None = None,
        vae_setting: str | None = None,
        clip_skip: Any = None,
        alwayson_scripts: Mapping[str, Any] | None = None,
    ) -> Job:
        """A job on ``recipe`` (default: the selected model) or on ``graph``; the request
        fields are checked on their own here (types, ranges) so bad input is refused before
        it is queued; what depends on the model is checked by the worker. ``vae``: this
        request's ``sd_vae``; ``vae_setting``: an ``sd_vae`` setting being made (default: the
        current one; :meth:`vae_options`); ``clip_skip``: ``CLIP_stop_at_last_layers`` of
        this request or of a setting being made (:meth:`clip_skip_options`);
        ``alwayson_scripts``: the request's, for its ControlNet units
        (:meth:`controlnet_options`; img2img's fall back on ``fields``' init image)."""
        from t2i.engine import Engine

        fields = _floats(dict(fields or {}))
        prevalidate(prompt, fields)
        settings = self.settings
        device, dtype = settings.device, settings.dtype
        if graph is not None:
            key = model_key(graph=graph)

            def build() -> Any:
                return Engine.from_graph(graph, plugins=self.manager, device=device, dtype=dtype)
        else:
            chosen = self.select(recipe or self.current, "recipe")
            name, label = chosen.recipe, chosen.title if not options else ""
            control, control_fields = self.controlnet_options(
                chosen, alwayson_scripts, fields.get("init_image")
            )
            fields.update(control_fields)
            options = {
                **chosen.options,
                **self.vae_options(chosen, vae, vae_setting),
                **self.embedding_options(chosen),
                **self.clip_skip_options(chosen, clip_skip),
                **({"lora_dir": str(settings.lora_dir)} if settings.lora_dir else {}),
                **control,
                **(options or {}),
            }
            key = model_key(name, options)

            def build() -> Any:
                return Engine.build(
                    name, plugins=self.manager, device=device, dtype=dtype, **options
                )

        axes = self._vae_axes(list(axes or []))
        return Job(
            key, build, prompt=prompt, fields=fields, mode=mode, axes=axes,
            label=label if graph is None else "",
        )  # fmt: skip

    def _vae_axes(self, axes: list[str]) -> list[str]:
        """X/Y/Z axes with a ``vae`` axis's names (``/sd-vae`` entries) and a ``checkpoint``
        axis's model titles (``/sd-models``) turned into paths (``Automatic`` / ``None``
        stay: the checkpoint's own).

        Raises:
            RequestError: naming ``xyz``: a value that is no VAE of the folder, or no model.
        """
        from t2i.xyz import Axis, XYZError

        out = []
        for spec in axes:
            try:
                axis = Axis.parse(spec)
            except XYZError:
                out.append(spec)  # the worker reports it
                continue
            if axis.field not in ("vae", "checkpoint"):
                out.append(spec)
                continue
            values = [self._axis_path(axis.field, str(value)) for value in axis.values]
            quoted = ",".join('"' + v.replace('"', '""') + '"' for v in values)
            out.append(f"{axis.field}={quoted}")
        return out

    def _axis_path(self, field: str, value: str) -> str:
        """The file a ``vae`` / ``checkpoint`` axis value names (a path: as given)."""
        if field == "vae":
            vae = self.vae_named(value, "xyz")
            return str(vae.path) if vae is not None else value
        if Path(value).exists():
            return value
        return str(self.select(value, "xyz").options.get("checkpoint", value))

    def submit(self, job: Job) -> Job:
        self.worker.start()
        return self.worker.submit(job)


def checked_clip_skip(value: Any) -> int:
    """``CLIP_stop_at_last_layers`` as an integer >= 1 (a JSON ``2.0`` counts as 2).

    Raises:
        RequestError: anything else, naming the setting.
    """
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(
            "CLIP_stop_at_last_layers",
            f"must be an integer >= 1 (1: the last layer), got {value!r}",
        )
    return value


def prevalidate(prompt: Any, fields: Mapping[str, Any]) -> None:
    """Check the request fields that need no model (type and range of each known field).

    Raises:
        RequestError: naming the field.
    """
    known = {k: v for k, v in fields.items() if k in REQUEST_FIELDS}
    GenerationRequest(prompt=prompt, **{k: v for k, v in known.items() if k != "prompt"})


FLOAT_FIELDS = ("cfg_scale", "strength", "eta")
"""Float request fields: JSON ``7`` is read as ``7.0`` (so the infotext says ``7.0`` however
the client wrote it, as the A1111 routes' float fields do)."""


def _floats(fields: dict[str, Any]) -> dict[str, Any]:
    for name in FLOAT_FIELDS:
        value = fields.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            fields[name] = float(value)
    return fields


def _defaults(recipe: Any, bound: set[str]) -> dict[str, Any]:
    """The request's own defaults of the bound fields, then the recipe's."""
    import attrs

    out = {f.name: f.default for f in attrs.fields(GenerationRequest) if f.name in bound}
    out.update(recipe.defaults)
    return {k: v for k, v in out.items() if _jsonable(v)}


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list, dict))

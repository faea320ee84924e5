"""Offscreen moderngl renderer of the canonical avatar: the only source of output pixels.

The avatar is always the canonical face model; an :class:`~dmask_live.types.AvatarState` only
moves it (head pose, expression, eyelids, gaze). Nothing from the input image is used: colours
are constants, geometry is the model. Projection is orthographic in image pixels, matching the
tracker's weak-perspective camera, so in ``follow`` placement the avatar lands exactly where the
patient's face was.

Besides the face mesh and eyeballs the avatar has a canonical skull and neck
(:mod:`dmask_live.avatar_head`) and soft eye detail - lash lines, the upper lid's shadow and
crease, a pink caruncle (:mod:`dmask_live.eye_detail`) - because the landmark networks read a
bare mesh face wrongly (the forehead edge as the face's top, eye corners off), and the measured
signs must survive the mask (``benchmarks/bench_fidelity.py`` tracks the rendered avatar again).

GL contexts are bound to the thread that created them: create, use and release an
``AvatarRenderer`` on one thread (see :class:`dmask_live.pipeline.PipelineWorker`).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from dmask_live import avatar_head, eye_detail, shaders
from dmask_live.types import AvatarState

log = logging.getLogger(__name__)

Colour = tuple[int, int, int]

BACKGROUND: Colour = (139, 152, 168)  # neutral grey-blue
SKIN = (0.86, 0.70, 0.60)
BROW = (0.42, 0.33, 0.28)
LIP = (0.74, 0.47, 0.45)
SCLERA = (0.95, 0.94, 0.91)
IRIS = (0.30, 0.42, 0.55)
PUPIL = (0.04, 0.04, 0.05)
MOUTH_INSIDE = (0.22, 0.09, 0.09)
NOSTRIL = (0.16, 0.09, 0.08)
CLOSED_LID = tuple(0.78 * c for c in SKIN)  # where closed lid margins meet (reads as a lash line)
CLOSED_OPENNESS = 0.04  # both lids of an eye below this openness: the eye is closed
GLYPH: Colour = (112, 120, 132)  # "face not found" outline

PLACEMENTS = ("follow", "centre")
GL_PACKAGES = "libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libgbm1"

# MediaPipe mesh indices (the first 468 model vertices are the mesh points).
# Brows: each part of the brow edges with its shade, skin (0) .. BROW (1), beyond 1 darker still.
# The tracker places each eyeball by the periorbital loops the landmark networks read, and on the
# avatar they read them where the brows suggest: with uniformly dark brows 1.3 px above the model
# (re-tracked gaze about 5° low), with skin-coloured ones below it. These shades, searched on
# renders of the canonical face (frontal, gaze/lid/pose cases at two sizes; shut eyes must still
# read shut), make the networks read the orbit where the model has it: known-truth gaze error
# 4-5° -> about 2° RMS, real-clip round trip 6.3° -> 4.3° (benchmarks/results/fidelity.md).
_BROW_SHADES = (
    ((107, 66, 336, 296), 0.807),  # upper edge, inner half
    ((105, 63, 70, 334, 293, 300), 0.687),  # upper edge, outer half
    ((55, 65, 285, 295), 0.752),  # lower edge, inner half
    ((52, 53, 46, 282, 283, 276), 1.548),  # lower edge, outer half: the darkest
)
_LIPS = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
)  # fmt: skip

# Nostril openings under the nose tip and their rims (mesh indices, both sides). Seen from the
# front, real nostrils are dark; a nose without them reads to the mesh network as a head pitched
# down (measured: the tracker's pitch bias on the avatar went from -3.2° to -2.7° with them).
_NOSTRILS = (20, 238, 241, 250, 458, 461)
_NOSTRIL_RIMS = (60, 79, 242, 239, 99, 97, 290, 309, 462, 459, 328, 326)

# Eyeball local frame: +z points away from the camera (image convention), so the cornea is at -z.
EYE_FORWARD_LOCAL = np.array([0.0, 0.0, -1.0])
# Light direction (toward the light) in image space: on the view axis, a touch below, like the
# screen a telemedicine patient faces. Shading is what the mesh network reads depth from, and its
# depth sets the tracker's pitch: measured with bench_fidelity (pitch RMS error on near-frontal
# sequences / one eye turned 15° in, recovered): light 0.2 above the axis 3.4° / 10.9°, on the axis
# 2.5° / 13.8°, 0.05 below 1.9° / 13.6°, 0.1 below 1.0° / 12.7°, 0.2 below 0.6° / 7.9°. A side
# light reads as yaw (the earlier up-left light added ~1°).
_LIGHT = np.array([0.0, 0.05, -1.0])
_LIGHT = tuple(float(v) for v in _LIGHT / np.linalg.norm(_LIGHT))

def create_context():
    """A headless OpenGL 3.3 context via EGL, or one error saying what to install."""
    import moderngl

    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as exc:  # noqa: BLE001 - turned into one actionable message
        raise RuntimeError(
            f"cannot create an offscreen OpenGL context through EGL ({type(exc).__name__}: {exc}). "
            f"Install the EGL/GL libraries (Debian/Ubuntu: apt-get install {GL_PACKAGES}) "
            "or a GPU driver that provides EGL."
        ) from exc


EYE_SEGMENTS = 32  # around the optical axis; the sphere's hole and the iris disc share them


def uv_sphere(
    rings: int = 14, segments: int = EYE_SEGMENTS, hole: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere (vertices (N,3) float32, triangles (M,3) int32), poles on the z axis.

    ``hole``: polar angle (radians) around the front pole (-z) left open, where the iris disc goes.
    Cutting it from the mesh instead of discarding fragments keeps early depth rejection working.
    """
    t, p, tris = avatar_head.sphere_grid(rings, segments, start=hole)
    verts = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), -np.cos(t)], axis=-1).reshape(-1, 3)
    return verts.astype(np.float32), tris.astype(np.int32)


def neutral_frame(width: int, height: int, background: Colour = BACKGROUND) -> np.ndarray:
    """Background plus a grey head-and-shoulders outline: the "face not found" frame."""
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = background
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    unit = min(width, height)
    thickness = max(2.0, unit / 120.0)
    cx, cy = width / 2.0, height * 0.44
    ax, ay = unit * 0.17, unit * 0.23
    head = np.abs(np.hypot((xx - cx) / ax, (yy - cy) / ay) - 1.0) * min(ax, ay) < thickness
    sx, sy = unit * 0.38, unit * 0.28
    shoulder_cy = cy + ay + sy * 1.05
    shoulders = np.abs(np.hypot((xx - cx) / sx, (yy - shoulder_cy) / sy) - 1.0) * min(sx, sy) < thickness
    shoulders &= yy < shoulder_cy
    frame[head | shoulders] = GLYPH
    return frame


def disc(segments: int = EYE_SEGMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Unit disc in the z=0 plane (centre last), as vertices (N,3) float32 and a triangle fan."""
    angle = np.linspace(0.0, 2.0 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(angle), np.sin(angle), np.zeros(segments)], 1)
    verts = np.vstack([ring, [[0.0, 0.0, 0.0]]]).astype(np.float32)
    return verts, _fan(segments)


def _check_state(state: AvatarState) -> None:
    """A tracked state must be finite with a positive scale (else the pipeline fails closed)."""
    for name in ("head_pose_deg", "translation", "expression", "eyelids", "gaze_deg"):
        if not np.all(np.isfinite(np.asarray(getattr(state, name), np.float64))):
            raise ValueError(f"AvatarState.{name} has non-finite values")
    if not (np.isfinite(state.scale) and state.scale > 0):
        raise ValueError(f"AvatarState.scale must be positive and finite, got {state.scale}")
    width, height = state.image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"AvatarState.image_size must be positive, got {state.image_size}")


def _fan(count: int) -> np.ndarray:
    """Triangles of a fan from vertex ``count`` (the centre) over a closed loop of ``count``."""
    i = np.arange(count)
    return np.stack([np.full(count, count), i, (i + 1) % count], 1).astype(np.int32)


class AvatarRenderer:
    """Renders :class:`AvatarState` to ``(height, width, 3)`` uint8 RGB frames.

    placement: ``"follow"`` puts the head where the patient's head is in the frame (state image
    coordinates scaled to the output size); ``"centre"`` centres it at a fixed size.
    """

    def __init__(
        self,
        width: int,
        height: int,
        placement: str = "follow",
        background: Colour = BACKGROUND,
        model=None,
        ctx=None,
    ) -> None:
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"renderer size must be positive, got {width}x{height}")
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        from dmask_live import face_model as fm

        self._fm = fm
        self.width, self.height = int(width), int(height)
        self.placement = placement
        self.background = tuple(int(c) for c in background)
        self.model = fm.load_face_model() if model is None else model
        self._neutral: np.ndarray | None = None
        self._released = False
        self._prepare_model()
        self.ctx = create_context() if ctx is None else ctx
        self._owns_ctx = ctx is None
        try:
            self._build_gl()
        except Exception:
            self.release()
            raise

    # ----------------------------------------------------------------- set-up
    def _prepare_model(self) -> None:
        m = self.model
        verts = np.asarray(m.vertices, np.float64)
        self._n_verts = len(verts)
        self._triangles = np.ascontiguousarray(m.triangles, np.int32)
        # Vertex normal = sum of incident face normals: a sparse (V, T) incidence matrix.
        from scipy.sparse import csr_matrix

        t = self._triangles
        rows = t.ravel()
        cols = np.repeat(np.arange(len(t)), 3)
        self._incidence = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(self._n_verts, len(t)))
        colours = np.tile(np.asarray(SKIN, np.float32), (self._n_verts, 1))
        skin = np.asarray(SKIN, np.float32)
        for indices, shade in _BROW_SHADES:
            shaded = np.clip(skin + shade * (np.asarray(BROW, np.float32) - skin), 0.0, 1.0)
            colours[[i for i in indices if i < self._n_verts]] = shaded
        colours[[i for i in _LIPS if i < self._n_verts]] = LIP
        colours[[i for i in _NOSTRILS if i < self._n_verts]] = NOSTRIL
        rim = [i for i in _NOSTRIL_RIMS if i < self._n_verts]
        colours[rim] = 0.5 * (np.asarray(NOSTRIL) + np.asarray(SKIN))
        self._colours = colours
        self._mouth_ring = np.asarray(m.mouth_ring, np.int64)
        self._eye_rings = [np.asarray(r, np.int64) for r in m.eye_ring]
        # eye_ring: lower margin outer→inner corner (0..8), then the upper margin back (9..15).
        self._ring_index = np.stack(self._eye_rings)
        self._head_verts, self._head_normals, head_colours, self._head_tris = avatar_head.ellipsoid_meshes()
        self._head_colours = head_colours
        mouth = verts[self._mouth_ring]
        self._mouth_depth = 0.35 * float(np.ptp(mouth[:, 0]))  # model units behind the lips
        self._socket_depth = 1.3 * float(m.eyeball_radius)
        extent = np.linalg.norm(verts - verts.mean(0), axis=1).max()
        self._model_radius = float(extent + 2.0 * m.eyeball_radius)
        # Centre placement frames the head from the skull's top to the chin (the neck runs on).
        lo, hi = verts.min(0), verts.max(0)
        lo[1] = min(lo[1], float(self._head_verts[:, 1].min()))
        self._model_centre = (lo + hi) / 2.0
        self._model_height = float(hi[1] - lo[1])

    def _build_gl(self) -> None:
        ctx = self.ctx
        self._fbo = ctx.simple_framebuffer((self.width, self.height), components=4)
        self._skin_prog = ctx.program(vertex_shader=shaders.SKIN_VS, fragment_shader=shaders.SKIN_FS)
        self._eye_prog = ctx.program(vertex_shader=shaders.EYE_VS, fragment_shader=shaders.EYE_FS)
        self._flat_prog = ctx.program(vertex_shader=shaders.FLAT_VS, fragment_shader=shaders.FLAT_FS)
        self._ribbon_prog = ctx.program(vertex_shader=shaders.RIBBON_VS, fragment_shader=shaders.RIBBON_FS)
        for prog in self._programs():
            prog["viewport"].value = (float(self.width), float(self.height))
        for prog in (self._skin_prog, self._eye_prog):
            prog["light_dir"].value = _LIGHT
        m = self.model
        self._eye_prog["iris_r"].value = float(m.iris_radius / m.eyeball_radius)
        self._eye_prog["pupil_r"].value = float(m.pupil_radius / m.eyeball_radius)
        self._eye_prog["sclera"].value = SCLERA
        self._eye_prog["iris"].value = IRIS
        self._eye_prog["pupil"].value = PUPIL

        # Skin, and the skull and neck (avatar_head): drawn with the skin program.
        self._static_buffers: list = []
        self._skin_vbo, self._skin_vao = self._shaded_mesh(self._n_verts, self._colours, self._triangles)
        self._head_vbo, self._head_vao = self._shaded_mesh(
            len(self._head_verts), self._head_colours, self._head_tris
        )
        sphere_v, sphere_t = uv_sphere(hole=float(np.arcsin(min(m.iris_radius / m.eyeball_radius, 1.0))))
        self._sphere_vbo = ctx.buffer(sphere_v.tobytes())
        self._sphere_ibo = ctx.buffer(sphere_t.tobytes())
        self._eye_vao = ctx.vertex_array(
            self._eye_prog, [(self._sphere_vbo, "3f", "in_local")], index_buffer=self._sphere_ibo
        )
        # The iris disc in the eyeball's unit-sphere frame: radius iris_r at depth -iris_depth.
        disc_v, disc_t = disc()
        disc_v[:, :2] *= m.iris_radius / m.eyeball_radius
        disc_v[:, 2] = -getattr(m, "iris_depth", 0.0) / m.eyeball_radius
        self._disc_vbo = ctx.buffer(disc_v.astype(np.float32).tobytes())
        self._disc_ibo = ctx.buffer(disc_t.tobytes())
        self._disc_vao = ctx.vertex_array(
            self._eye_prog, [(self._disc_vbo, "3f", "in_local")], index_buffer=self._disc_ibo
        )
        # Fills behind the mouth ring (dark) and each eye ring (conjunctiva): fans to a point pushed back.
        # The eye sockets carry per-vertex colour (pink caruncle at the inner corner, shaded
        # conjunctiva elsewhere), drawn with the ribbon program; the mouth is one flat colour.
        ring = self._mouth_ring
        vbo = ctx.buffer(reserve=(len(ring) + 1) * 3 * 4, dynamic=True)
        self._mouth_fill = (ring, vbo, ctx.vertex_array(
            self._flat_prog, [(vbo, "3f", "in_pos")], index_buffer=self._fan_buffer(len(ring))))
        self._socket_fills = []
        for ring in self._eye_rings:
            vbo = ctx.buffer(reserve=(len(ring) + 1) * 7 * 4, dynamic=True)
            vao = ctx.vertex_array(self._ribbon_prog, [(vbo, "3f 4f", "in_pos", "in_rgba")],
                                   index_buffer=self._fan_buffer(len(ring)))
            self._socket_fills.append((ring, vbo, vao))
        self._socket_rgba = eye_detail.socket_colours(len(self._eye_rings[0]))
        self._closed_rgba = np.tile((*CLOSED_LID, 1.0), (len(self._eye_rings[0]) + 1, 1))
        # Eye detail (lash lines, lid shadow, crease): one buffer of RGBA ribbons, one draw call.
        tris = eye_detail.ribbon_triangles(eye_detail.STYLES)
        self._ribbon_vbo = ctx.buffer(reserve=(int(tris.max()) + 1) * 7 * 4, dynamic=True)
        self._ribbon_ibo = ctx.buffer(tris.tobytes())
        self._ribbon_vao = ctx.vertex_array(
            self._ribbon_prog, [(self._ribbon_vbo, "3f 4f", "in_pos", "in_rgba")],
            index_buffer=self._ribbon_ibo,
        )

    def _fan_buffer(self, count: int):
        """Index buffer of a fan over a ring of ``count`` vertices (released with the renderer)."""
        ibo = self.ctx.buffer(_fan(count).tobytes())
        self._static_buffers.append(ibo)
        return ibo

    def _shaded_mesh(self, vertex_count: int, colours: np.ndarray, triangles: np.ndarray) -> tuple:
        """(vbo, vao) of a skin-program mesh: positions+normals written per frame (one interleaved
        buffer), colours and triangles static."""
        ctx = self.ctx
        vbo = ctx.buffer(reserve=vertex_count * 6 * 4, dynamic=True)
        colour_vbo, ibo = ctx.buffer(colours.tobytes()), ctx.buffer(triangles.tobytes())
        self._static_buffers += [colour_vbo, ibo]
        vao = ctx.vertex_array(
            self._skin_prog,
            [(vbo, "3f 3f", "in_pos", "in_normal"), (colour_vbo, "3f", "in_color")],
            index_buffer=ibo,
        )
        return vbo, vao

    def _programs(self) -> tuple:
        return (self._skin_prog, self._eye_prog, self._flat_prog, self._ribbon_prog)

    # ----------------------------------------------------------------- public
    def render(self, state: AvatarState) -> np.ndarray:
        """The avatar for ``state`` (or the neutral frame when not tracked) as (H, W, 3) uint8."""
        if self._released:
            raise RuntimeError("AvatarRenderer.render() after release()")
        if not state.tracked:
            return self.neutral_frame()
        _check_state(state)
        # Make this renderer's context current: another context may have been made current on
        # this thread since (a second renderer, a pipeline), and GL calls go to the current one.
        with self.ctx:
            return self._draw(state)

    def _draw(self, state: AvatarState) -> np.ndarray:
        state, out_scale = self._placed_state(state)
        fm = self._fm
        verts = np.asarray(fm.posed_vertices(self.model, state), np.float64) * out_scale
        normals = self._vertex_normals(verts)
        self._skin_vbo.write(np.hstack([verts, normals]).astype(np.float32).tobytes())
        backward = (fm.rotation_matrix(state.head_pose_deg) @ np.array([0.0, 0.0, 1.0])) * state.scale
        backward = backward * out_scale

        depth_half_range = self._model_radius * state.scale * float(out_scale.max()) * 2.0 + 1.0
        for prog in self._programs():
            prog["depth_half_range"].value = depth_half_range

        fbo = self._fbo
        fbo.use()
        self.ctx.enable_only(self.ctx.DEPTH_TEST)
        bg = tuple(c / 255.0 for c in self.background)
        fbo.clear(bg[0], bg[1], bg[2], 1.0, depth=1.0)
        self._skin_prog["far_layer"].value = False
        self._skin_vao.render()
        self._draw_head(state, out_scale)
        closed = fm.drawn_eyelids(state.eyelids).max(axis=1) < CLOSED_OPENNESS
        self._draw_fills(verts, backward, closed)
        if not closed.all():
            centres = fm.eyeball_centres(self.model, state.expression)  # both eyes, once
            for eye in (0, 1):
                if not closed[eye]:
                    self._draw_eyeball(state, eye, centres, out_scale)
        self._draw_eye_detail(verts, backward)
        frame = np.empty((self.height, self.width, 3), np.uint8)
        fbo.read_into(frame, components=3, alignment=1)
        return frame

    def neutral_frame(self) -> np.ndarray:
        """The cached "face not found" frame (a copy, so callers may draw on it)."""
        if self._neutral is None:
            self._neutral = neutral_frame(self.width, self.height, self.background)
        return self._neutral.copy()

    def release(self) -> None:
        """Free GL objects (and the context if this renderer created it). Idempotent."""
        if self._released:
            return
        self._released = True
        ctx = getattr(self, "ctx", None)
        if ctx is None:
            return
        if self._owns_ctx:
            ctx.release()
        else:
            with ctx:
                for obj in self._gl_objects():
                    obj.release()
        self.ctx = None

    def _gl_objects(self) -> list:
        objects = [v for k, v in vars(self).items() if k != "ctx" and hasattr(v, "mglo")]
        fills = [getattr(self, "_mouth_fill", None), *getattr(self, "_socket_fills", [])]
        for _, vbo, vao in filter(None, fills):
            objects += [vao, vbo]
        return objects + getattr(self, "_static_buffers", [])

    def __enter__(self) -> AvatarRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # ----------------------------------------------------------------- helpers
    def _placed_state(self, state: AvatarState) -> tuple[AvatarState, np.ndarray]:
        """The state to pose with, and the per-axis factor from its image space to the output."""
        if self.placement == "centre":
            scale = 0.8 * self.height / max(self._model_height, 1e-9)
            centre = np.array([self.width / 2.0, self.height / 2.0])
            translation = centre - scale * self._model_centre[:2]
            placed = dataclasses.replace(
                state, translation=translation.astype(np.float32), scale=float(scale),
                image_size=(self.width, self.height),
            )
            return placed, np.ones(3)
        src_w, src_h = state.image_size
        sx, sy = self.width / float(src_w), self.height / float(src_h)
        return state, np.array([sx, sy, 0.5 * (sx + sy)])

    def _draw_eye_detail(self, verts: np.ndarray, backward: np.ndarray) -> None:
        """Blended ribbons over skin and eyeballs, depth-tested (a nose in front hides them)."""
        towards_camera = -backward / max(float(np.linalg.norm(backward)), 1e-9)
        ribbons = eye_detail.ribbon_vertices(verts, self._ring_index, towards_camera, eye_detail.STYLES)
        self._ribbon_vbo.write(ribbons.tobytes())
        ctx = self.ctx
        ctx.enable(ctx.BLEND)
        ctx.blend_func = ctx.SRC_ALPHA, ctx.ONE_MINUS_SRC_ALPHA
        ctx.depth_mask = False
        self._ribbon_vao.render()
        ctx.depth_mask = True
        ctx.disable(ctx.BLEND)

    def _draw_head(self, state: AvatarState, out_scale: np.ndarray) -> None:
        """Skull and neck: rigid with the head (pose only), behind everything else."""
        head = self._fm.rotation_matrix(state.head_pose_deg)
        verts = self._fm.project(self._head_verts, state, head) * out_scale
        normals = (self._head_normals @ head.T) / out_scale
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        self._head_vbo.write(np.hstack([verts, normals]).astype(np.float32).tobytes())
        # At the far plane after the face: the face always covers them (the skull can never show
        # through it), covered pixels are not shaded, and the first part drawn wins where they
        # overlap. Back faces are culled (the parts are convex).
        ctx = self.ctx
        ctx.enable(ctx.CULL_FACE)
        self._skin_prog["far_layer"].value = True
        self._head_vao.render()
        self._skin_prog["far_layer"].value = False
        ctx.disable(ctx.CULL_FACE)

    def _draw_fills(self, verts: np.ndarray, backward: np.ndarray, closed: np.ndarray) -> None:
        """Mouth interior and eye sockets behind the rings; a closed eye gets a lid-coloured cap.

        The cap hides the pixel cracks where the two closed lid margins meet, so a closed eye
        never shows specks of eyeball.
        """
        ring, vbo, vao = self._mouth_fill
        loop = verts[ring]
        vbo.write(np.vstack([loop, loop.mean(0) + backward * self._mouth_depth]).astype(np.float32).tobytes())
        self._flat_prog["color"].value = MOUTH_INSIDE
        vao.render()
        for eye, (ring, vbo, vao) in enumerate(self._socket_fills):
            loop = verts[ring]
            if closed[eye]:
                centre, rgba = loop.mean(0), self._closed_rgba
            else:
                centre, rgba = loop.mean(0) + backward * self._socket_depth, self._socket_rgba
            vbo.write(np.hstack([np.vstack([loop, centre]), rgba]).astype(np.float32).tobytes())
            vao.render()

    def _draw_eyeball(self, state: AvatarState, eye: int, centres: np.ndarray, out_scale: np.ndarray) -> None:
        centre, rotation, px_per_unit = self._fm.eyeball_pose(self.model, state, eye, centres)
        radius_px = px_per_unit * self.model.eyeball_radius
        matrix = np.diag(out_scale) @ np.asarray(rotation, np.float64) * radius_px
        self._eye_prog["eye_centre"].value = tuple(float(v) for v in np.asarray(centre) * out_scale)
        self._eye_prog["eye_matrix"].write(np.ascontiguousarray(matrix.T, np.float32).tobytes())
        self._eye_prog["is_disc"].value = False
        self._eye_vao.render()
        self._eye_prog["is_disc"].value = True
        self._disc_vao.render()

    def _vertex_normals(self, verts: np.ndarray) -> np.ndarray:
        t = self._triangles
        face_n = np.cross(verts[t[:, 1]] - verts[t[:, 0]], verts[t[:, 2]] - verts[t[:, 0]])
        normals = self._incidence @ face_n
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        return normals / np.maximum(length, 1e-12)

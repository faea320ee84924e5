"""GLSL 330 shaders of the avatar renderer (:mod:`dmask_live.renderer`).

All geometry arrives in image pixels (x right, y down, z away from the camera) and is projected
orthographically, matching the tracker's weak-perspective camera. Colours are uniforms or static
per-vertex constants: nothing here ever samples an input image.
"""

# Every vertex shader starts with this: geometry in image pixels -> clip space.
_VERTEX_HEADER = """
#version 330
uniform vec2 viewport;
uniform float depth_half_range;
// Image y runs down and framebuffer rows are read bottom-up: mapping y=0 to clip -1
// makes the read-back array come out top row first without a flip.
vec4 to_clip(vec3 p) {
    return vec4(p.x / viewport.x * 2.0 - 1.0, p.y / viewport.y * 2.0 - 1.0,
                clamp(p.z / depth_half_range, -1.0, 1.0), 1.0);
}
"""

SKIN_VS = _VERTEX_HEADER + """
uniform bool far_layer;  // skull and neck: at the far plane, behind everything (early-z culls them)
in vec3 in_pos;
in vec3 in_normal;
in vec3 in_color;
out vec3 v_normal;
out vec3 v_color;
void main() {
    gl_Position = to_clip(in_pos);
    if (far_layer) gl_Position.z = 0.9999;
    v_normal = in_normal;
    v_color = in_color;
}
"""

SKIN_FS = """
#version 330
uniform vec3 light_dir;
in vec3 v_normal;
in vec3 v_color;
out vec4 f_color;
void main() {
    vec3 n = normalize(v_normal);
    if (n.z > 0.0) n = -n;  // two-sided: always face the camera (at -z)
    float diffuse = max(dot(n, light_dir), 0.0);
    vec3 h = normalize(light_dir + vec3(0.0, 0.0, -1.0));
    float spec = pow(max(dot(n, h), 0.0), 24.0) * 0.08;
    f_color = vec4(v_color * (0.42 + 0.62 * diffuse) + vec3(spec), 1.0);
}
"""

EYE_VS = _VERTEX_HEADER + """
uniform mat3 eye_matrix;   // local unit sphere -> image pixels (rotation * scale * radius)
uniform vec3 eye_centre;
in vec3 in_local;
out vec3 v_local;
out vec3 v_normal;
void main() {
    vec3 p = eye_centre + eye_matrix * in_local;
    gl_Position = to_clip(p);
    v_local = in_local;
    v_normal = eye_matrix * in_local;
}
"""

EYE_FS = """
#version 330
uniform vec3 light_dir;
uniform mat3 eye_matrix;
uniform bool is_disc;    // false: the sclera sphere (front cap open); true: the iris disc
uniform float iris_r;    // iris radius / eyeball radius
uniform float pupil_r;   // pupil radius / eyeball radius
uniform vec3 sclera;
uniform vec3 iris;
uniform vec3 pupil;
in vec3 v_local;
in vec3 v_normal;
out vec4 f_color;
void main() {
    vec3 h = normalize(light_dir + vec3(0.0, 0.0, -1.0));
    if (!is_disc) {
        // The sphere mesh has a hole where the iris disc sits (no discard: early-z stays on).
        vec3 n = normalize(v_normal);
        if (n.z > 0.0) n = -n;
        float diffuse = max(dot(n, light_dir), 0.0);
        float spec = pow(max(dot(n, h), 0.0), 60.0) * 0.25;
        f_color = vec4(sclera * (0.55 + 0.45 * diffuse) + vec3(spec), 1.0);
        return;
    }
    float d = length(v_local.xy);
    float aa = max(fwidth(d), 1e-4);
    float in_pupil = 1.0 - smoothstep(pupil_r - aa, pupil_r + aa, d);
    float limbus = smoothstep(iris_r * 0.72, iris_r, d);   // darker rim of the iris
    vec3 base = mix(mix(iris, iris * 0.5, limbus), pupil, in_pupil);
    // Corneal highlight: the normal of the cornea (unit sphere) above this point.
    vec3 cornea = vec3(v_local.xy, -sqrt(max(1.0 - dot(v_local.xy, v_local.xy), 0.0)));
    vec3 n = normalize(eye_matrix * cornea);
    if (n.z > 0.0) n = -n;
    float diffuse = max(dot(n, light_dir), 0.0);
    float spec = pow(max(dot(n, h), 0.0), 400.0) * 0.9;  // the catchlight
    f_color = vec4(base * (0.6 + 0.4 * diffuse) + vec3(spec), 1.0);
}
"""

FLAT_VS = _VERTEX_HEADER + """
in vec3 in_pos;
void main() {
    gl_Position = to_clip(in_pos);
}
"""

FLAT_FS = """
#version 330
uniform vec3 color;
out vec4 f_color;
void main() { f_color = vec4(color, 1.0); }
"""

# Soft eye-region ribbons (lash lines, lid shadow, crease): per-vertex RGBA, blended over the face.
RIBBON_VS = _VERTEX_HEADER + """
in vec3 in_pos;
in vec4 in_rgba;
out vec4 v_rgba;
void main() {
    gl_Position = to_clip(in_pos);
    v_rgba = in_rgba;
}
"""

RIBBON_FS = """
#version 330
in vec4 v_rgba;
out vec4 f_color;
void main() { f_color = v_rgba; }
"""

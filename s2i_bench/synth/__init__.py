"""The embedded synthetic audiovisual world (SPEC section 8) and its judge.

Five classes with the VEGAS names; every video is one scene (`scenes.draw_scene`) whose picture
and sound share two latent attributes: `tone` (sound pitch / spectral centre <-> hue of a large
region) and `size` (loudness <-> size of the main object). Entry points:

    write_world(out, protocol, videos_per_class=None, seed=None, dirty=False, overwrite=False)
        the `s2i-bench synth` command: .mp4 files (H.264 + AAC) per class folder + scenes.json
    draw_scene(class_key, rng, video_id=..., duration=..., tone=None, size=None) -> scene dict
    render_frame(scene, t, width=160, height=120) -> (H, W, 3) uint8   (no encoding)
    render_crop(scene, t, size=96) -> (96, 96, 3) uint8, the centre square as `prepare` stores it
    render_audio(scene, sample_rate=22050, channels=2) -> (channels, n) float32 in [-1, 1]
    judge(images, class_key) -> bool (N,): is each uint8 (N, 96, 96, 3) image an informative
        picture of the class (the ground truth of informativity on synthetic data)

Tests elsewhere can make data without encoding: draw scenes, render crops and audio directly.
"""

from s2i_bench.synth.audio import render_audio
from s2i_bench.synth.judge import judge, judge_details
from s2i_bench.synth.render import render_crop, render_frame, render_frames
from s2i_bench.synth.scenes import CLASS_KEYS, WORLD_VERSION, draw_scene
from s2i_bench.synth.world import write_world  # PyAV itself is imported only when a world is written


__all__ = ["CLASS_KEYS", "WORLD_VERSION", "draw_scene", "judge", "judge_details", "render_audio",
           "render_crop", "render_frame", "render_frames", "write_world"]

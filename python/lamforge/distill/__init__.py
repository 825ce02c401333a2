"""Knowledge distillation: a fast student learns a teacher's potential energy surface.

The DPA-2 paper's recipe (a fine-tuned DPA-2 teaches a small model) with DP-GEN style active
learning: train the student on teacher-labelled frames, explore with MD driven by the student,
select frames by the student-teacher force deviation (trust levels), label the candidates with the
teacher, repeat until the student is accurate on what it explores. ``lamforge distill CONFIG``
runs :func:`lamforge.distill.loop.run_distillation`.
"""

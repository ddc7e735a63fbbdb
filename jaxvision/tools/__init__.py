"""Command-line tools over runs, each run from the repository root with `python -m`:

  jaxvision.tools.sweep      run an experiment's sweep (locally, or as one SLURM job array)
  jaxvision.tools.report     result tables (mean +- std over seeds) and plots from runs and sweeps
  jaxvision.tools.campaign   the sweeps behind a results file, run in order, then the report
  jaxvision.tools.evaluate   re-run a run's evaluators on its saved checkpoint (eval only)
  jaxvision.tools.sample     GAN grids and latent walks, video rollouts, from a run's checkpoint
  jaxvision.tools.inpaint    fill a hole in images with a GAN generator's best match

Training itself is `python -m jaxvision.main`. Importing a tool defines no flags: each defines
its flags only when it runs as a program.
"""

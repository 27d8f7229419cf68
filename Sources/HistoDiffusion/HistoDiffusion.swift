// HistoDiffusion: noise schedules, diffusion UNets, DDPM/DDIM sampling, pretraining, feature extraction and the
// latent autoencoder (SPEC §0–§4). Each part lives in its own file in this folder.

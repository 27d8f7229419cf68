// HistoMethods: segmentation models and the training methods built on the engine (supervised baselines,
// GenSelfDiff fine-tuning, sliding-window inference, the demo). Each part lives in its own file in this folder.

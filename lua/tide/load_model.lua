-- tide.load_model(path) rebuilds a model from a checkpoint saved with its
-- config (tide.serialize.load_model): no constructor call needed.
return require("tide.serialize").load_model

-- tide.save(path, model [, {optimizer =, metadata =}]) writes a checkpoint;
-- tide.save(path, {name = tensor} [, metadata]) writes tensors (safetensors).
return require("tide.serialize").save_any

-- tide.load(path, model [, {optimizer =, strict =}]) loads a checkpoint into
-- model and returns it; tide.load(path) returns {name = tensor}.
return require("tide.serialize").load_any

/* embed.c - a C host program that embeds LuaJIT and runs a tide model.
 *
 * The host links libtide itself, so the Lua binding finds the engine in this
 * process (one engine, shared by C and Lua) and the host can check the
 * engine's state after the Lua state is closed.
 *
 *   tide_embed [script.lua]     default: the decoder snippet below
 *   TIDE_ROOT=/path/to/tide     where lua/ and bindings/ are (default: the
 *                               source tree this was built from)
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>

#include "tide.h"

#ifndef TIDE_SOURCE_DIR
#define TIDE_SOURCE_DIR "."
#endif

/* A fixed random 2-layer MLP decoder z [n,2] -> 8x8 pixel probabilities,
 * sampled and drawn as text; the chunk returns the drawing. */
static const char *decoder_snippet =
    "local tide = require('tide')\n"
    "tide.manual_seed(2024)\n"
    "local latent, hidden, side, n = 2, 32, 8, 3\n"
    "local W1, b1 = tide.randn(hidden, latent) * 1.5, tide.zeros(hidden)\n"
    "local W2, b2 = tide.randn(side * side, hidden) * 0.8, tide.full({side * side}, -0.5)\n"
    "local function decode(z) return z:linear(W1, b1):tanh():linear(W2, b2):sigmoid() end\n"
    "return tide.no_grad(function()\n"
    "  local z = tide.randn(n, latent)\n"
    "  local p = decode(z)\n"
    "  local px = p:bernoulli():reshape(n, side, side):to_table()\n"
    "  local lines = {}\n"
    "  for r = 1, side do\n"
    "    local row = {}\n"
    "    for s = 1, n do\n"
    "      local cells = {}\n"
    "      for c = 1, side do cells[c] = px[s][r][c] == 1 and '#' or '.' end\n"
    "      row[s] = table.concat(cells)\n"
    "    end\n"
    "    lines[r] = table.concat(row, '   ')\n"
    "  end\n"
    "  lines[#lines + 1] = ('%d samples of %s, mean pixel probability %.4f')\n"
    "    :format(n, table.concat(p:shape(), 'x'), p:mean():item())\n"
    "  return table.concat(lines, '\\n')\n"
    "end)\n";

/* Prints and pops the error on top of the stack when status is not 0. */
static int report(lua_State *L, int status, const char *what) {
    if (status != 0) {
        fprintf(stderr, "%s: %s\n", what, lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return status;
}

static void set_package_path(lua_State *L, const char *root) {
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/bindings/?.lua;%s", root, root, root,
                    lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

int main(int argc, char **argv) {
    const char *root = getenv("TIDE_ROOT");
    if (!root || !*root) root = TIDE_SOURCE_DIR;
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "cannot create a Lua state\n");
        return 1;
    }
    luaL_openlibs(L);
    set_package_path(L, root);

    int rc = report(L, luaL_dostring(L, "tide = require('tide')"), "loading tide");
    if (rc == 0) {
        int st = argc > 1 ? luaL_loadfile(L, argv[1]) : luaL_loadstring(L, decoder_snippet);
        rc = report(L, st, "loading the model") || report(L, lua_pcall(L, 0, 1, 0), "running the model");
    }
    if (rc == 0) {
        printf("%s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        /* a bad call is an ordinary Lua error: the host lives on */
        if (luaL_dostring(L, "return tide.ones(2, 3):matmul(tide.ones(2, 3))") != 0) {
            printf("bad call caught: %s\n", lua_tostring(L, -1));
            lua_pop(L, 1);
        } else {
            fprintf(stderr, "a wrong-shape matmul did not fail\n");
            rc = 1;
        }
    }
    lua_close(L); /* runs the finalizers: every tensor is released */
    long long live = (long long)td_live_tensors();
    printf("tensors alive after lua_close: %lld\n", live);
    return rc != 0 || live != 0;
}

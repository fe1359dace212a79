-- HTTP requests per Host header, most first: an example for run_lua_script.
-- Put it in the directory PCAP_LUA_DIR names; call it with
--   run_lua_script(pcap_file, script = "http_hosts.lua", args = ["10"])
-- Argument 1: how many hosts to print (default 20).
local args = { ... }
local top = tonumber(args[1]) or 20

local host_field = Field.new("http.host")
local tap = Listener.new("http", "http.request")
local counts = {}

function tap.packet(pinfo, tvb)
  for _, h in ipairs({ host_field() }) do
    local name = tostring(h)
    counts[name] = (counts[name] or 0) + 1
  end
end

function tap.draw()
  local rows = {}
  for name, n in pairs(counts) do
    rows[#rows + 1] = { name = name, n = n }
  end
  table.sort(rows, function(a, b)
    if a.n ~= b.n then return a.n > b.n end
    return a.name < b.name
  end)
  for i = 1, math.min(top, #rows) do
    print(string.format("%d\t%s", rows[i].n, rows[i].name))
  end
end

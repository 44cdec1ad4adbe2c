$d0 << EOD
0.0 535.4062433772234
2.0 443.2999220337026
4.0 446.0691636046361
6.0 441.11788765957476
8.0 374.0785357038625
10.0 362.7344436780756
12.0 376.6209899814619
14.0 319.50416680859917
22.0 222.981645574767
28.0 191.03110608551606
34.0 160.4218238383889
40.0 148.35812709807368
EOD
$d1 << EOD
0.0 1217.9747341037455
2.0 1015.7004542773185
4.0 966.1546514994878
6.0 1032.796634645076
8.0 1148.8538728600038
10.0 1095.5345998299113
12.0 837.0290819346014
14.0 633.2878600765514
22.0 505.469514493846
28.0 486.77319960118575
34.0 392.9482184012255
40.0 336.2483484908426
EOD
$d2 << EOD
0.0 500.0
0.0 390.0
0.0 50.0
40.0 3.0
EOD
$d3 << EOD
0.0 250.0
25.0 300.0
40.0 230.0
EOD
$d4 << EOD
0.0 395.0
40.0 230.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/8-protocol.png'
set title "#8 ferry's protocol vs a raw TCP stream over RTT (no bandwidth cap)"
set xlabel "RTT (ms)"
set ylabel "MiB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set xrange [-1:42]
plot $d0 using 1:2 with linespoints  title "ferry: pull (2 conns x 64 chunks of 64 KiB in flight)", \
  $d1 using 1:2 with linespoints  title "raw TCP stream, same emulated link", \
  $d2 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: direct: gRPC 500, fRPC 390, Dudirekta 50; ~3 at 40 ms", \
  $d3 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: managed fRPC", \
  $d4 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: managed gRPC"

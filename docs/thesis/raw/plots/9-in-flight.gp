$d0 << EOD
0.0 246.13350416639412
5.0 20.77373020139194
10.0 11.592073031532294
15.0 7.489675276665048
20.0 5.744005498242479
30.0 3.9005791445343823
EOD
$d1 << EOD
0.0 298.2037732990801
5.0 127.45947724156366
10.0 70.27689300084553
15.0 53.33121630625938
20.0 44.726580584454695
30.0 31.078398935850753
EOD
$d2 << EOD
0.0 336.7557256471309
5.0 251.7363801994375
10.0 342.8956004356724
15.0 299.90566795236384
20.0 259.77026194039894
30.0 190.9231762935417
EOD
$d3 << EOD
0.0 282.1059018679281
5.0 319.31633414909675
10.0 211.80100950979914
15.0 223.42061159451455
20.0 259.74853500811616
30.0 369.95657993038503
EOD
$d4 << EOD
0.0 207.39742746240137
5.0 224.87770307215553
10.0 189.2723361747823
15.0 287.13077360316356
20.0 274.8303416476096
30.0 186.90782581285217
EOD
$d5 << EOD
5.0 1280.0
10.0 1220.0
15.0 1200.0
20.0 1210.0
30.0 1130.0
EOD
$d6 << EOD
5.0 1280.0
30.0 450.0
EOD
$d7 << EOD
5.0 360.0
30.0 70.0
EOD
set terminal pngcairo noenhanced size 900,640 font 'DejaVu Sans,10'
set output '/work/wt-thesis/docs/thesis/img/9-in-flight.png'
set title "#9 requests in flight vs RTT (ferry: pipelining; thesis: pull workers)"
set xlabel "RTT (ms)"
set ylabel "MiB/s (log)"
set grid
set key below left Left reverse maxcols 2 height 1
set logscale y
set xrange [-1:32]
plot $d0 using 1:2 with linespoints  title "ferry: 2 conns x 1 x 64 KiB = 0.125 MiB in flight", \
  $d1 using 1:2 with linespoints  title "ferry: 2 conns x 8 x 64 KiB = 1 MiB in flight", \
  $d2 using 1:2 with linespoints  title "ferry: 2 conns x 64 x 64 KiB = 8 MiB in flight", \
  $d3 using 1:2 with linespoints  title "ferry: 2 conns x 256 x 64 KiB = 32 MiB in flight", \
  $d4 using 1:2 with linespoints  title "ferry: 4 conns x 256 x 64 KiB = 64 MiB in flight", \
  $d5 using 1:2 with linespoints dt 2 pt 6 ps 1.6 lw 1.5 title "thesis: 16384 workers", \
  $d6 using 1:2 with linespoints dt 2 pt 8 ps 1.6 lw 1.5 title "thesis: 4092 workers", \
  $d7 using 1:2 with linespoints dt 2 pt 4 ps 1.6 lw 1.5 title "thesis: 512 workers"
